from ps1dask.cli import main

raise SystemExit(main())
