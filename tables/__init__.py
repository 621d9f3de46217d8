"""State models and the pure functions that change them (per PO, order and position)."""
