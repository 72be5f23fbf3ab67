"""Code tables of IEC 61968-9: ReadingType, EndDevice event/control types, reading qualities."""
