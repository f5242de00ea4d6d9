from lightning_m3ddm.cli import main

if __name__ == "__main__":
    main()
