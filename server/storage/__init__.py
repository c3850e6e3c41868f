"""Storage: engines, transactions, Piccolo tables and the Piccolo app."""
