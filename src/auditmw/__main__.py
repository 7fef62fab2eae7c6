from auditmw._cli import main

raise SystemExit(main())
