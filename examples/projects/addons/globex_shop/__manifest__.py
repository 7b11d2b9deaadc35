{"name": "Globex Shop", "version": "17.0.1.0.0", "depends": ["website_sale"], "license": "LGPL-3"}
