from reports.render import main

raise SystemExit(main())
