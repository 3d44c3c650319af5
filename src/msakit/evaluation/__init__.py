"""The field's metrics (numerically MMSA's) and the tables that print them."""
