"""The PV domain: locations, their CSV import, the shipped preset library, the sizing
arithmetic, the prompt a location gives, and the figure check of an answer."""
