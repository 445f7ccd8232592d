"""Flags of single algorithms, one module each: `add_arguments(parser)` adds an argument
group, `validate(args)` checks its values once the algorithm's defaults are filled in."""
