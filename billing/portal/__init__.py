"""Consumer journey: delegation, accounts, subscribe, checkout and billing pages."""
