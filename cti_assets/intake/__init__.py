"""Normalising source records into the observables table: values and TLP, decided once."""
