from auditmw._cli.main import main

raise SystemExit(main())
