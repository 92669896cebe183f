"""One rule book for every way a ref can move (git push, REST ref changes, Hub commits): facts
gathered by each door, the pure rules, the judge that applies them, and the effects (catalog
rebuild + events) once a change is accepted."""
