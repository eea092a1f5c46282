"""Scale-out back ends for scanning (Ray Data)."""
