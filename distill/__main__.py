from polydistill.cli import main

raise SystemExit(main())
