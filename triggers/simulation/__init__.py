"""Trying rules without real people: a backtest over stored events, a sandbox (DESIGN §4.6)."""
