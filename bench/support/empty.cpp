// Keeps the bench support library non-empty before any suite adds to it.
