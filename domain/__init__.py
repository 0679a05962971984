"""Pure domain of the node: value objects and services, standard library and attrs only."""
