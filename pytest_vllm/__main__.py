from pytest_vllm.cli import main

raise SystemExit(main())
