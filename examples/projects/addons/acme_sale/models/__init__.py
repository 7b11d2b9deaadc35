"""The models of acme_sale."""
