from nas_kd.cli import main

raise SystemExit(main())
