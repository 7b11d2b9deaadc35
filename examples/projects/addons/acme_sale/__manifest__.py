{"name": "ACME Sale", "version": "18.0.1.0.0", "depends": ["sale"], "license": "LGPL-3"}
