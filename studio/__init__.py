"""The whole studio wired together: the site's URL map over every app (the top layer)."""
