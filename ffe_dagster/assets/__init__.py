"""Software-defined assets of the optimization cycle (thin wiring over ``ffe_dagster.core``)."""
