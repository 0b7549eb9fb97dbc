from miras.cli import main

raise SystemExit(main())
