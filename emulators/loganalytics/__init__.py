"""Azure Monitor Log Analytics emulator: the Query API over the APIM emulator's ApiManagementGatewayLogs."""
