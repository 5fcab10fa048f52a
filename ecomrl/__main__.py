from ecomrl.cli import main

raise SystemExit(main())
