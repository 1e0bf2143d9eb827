"""A small COSEM server: interface classes, associations and the application layer of a logical device."""
