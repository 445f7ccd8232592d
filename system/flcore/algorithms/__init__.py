"""One module per algorithm (or family of variants), each declaring `SPECS`: a tuple of
`flcore.spec.AlgorithmSpec`. A new module here is a new `-algo`: the registry finds it."""
