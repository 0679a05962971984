"""``python -m v6node.app.cli``: how ``start --detach`` starts the node in the background."""
from v6node.app.cli import main

if __name__ == "__main__":
    main()
