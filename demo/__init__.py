"""`make demo`: the product doing its job end to end on the local stack. Not deployed."""
