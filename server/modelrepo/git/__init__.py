"""Everything that touches a bare repository: the one way to run git (runner), repositories on disk
(repos), reads at a revision (reads), what the catalog mirrors from a repository (snapshot), and git
for the operator commands (ops)."""
