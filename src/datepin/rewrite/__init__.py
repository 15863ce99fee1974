"""Pure page handling: parse upstream pages into the model, render views for clients.

- `negotiate`: which page format a client's Accept header asks for (PEP 691).
- `parse`: upstream JSON / HTML / JSON-API bytes -> model values, or PageError.
- `render`: a View -> HTML, JSON or JSON-API bytes (deterministic).
- `filenames`: what a distribution filename says (version, package type, Python tag).
"""
