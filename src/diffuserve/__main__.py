from diffuserve.cli import main

raise SystemExit(main())
