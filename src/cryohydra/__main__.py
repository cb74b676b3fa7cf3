from cryohydra.cli.main import main

raise SystemExit(main())
