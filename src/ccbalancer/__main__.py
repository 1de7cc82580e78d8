from ccbalancer.cli import main

raise SystemExit(main())
