import sys

if sys.argv[1:2] == ["load"]:
    from bench.load import main as load_main

    load_main(sys.argv[2:])
else:
    from bench.suite import main

    main()
