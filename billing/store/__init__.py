"""State in Azure Table Storage (Azurite locally): one module per table."""
