"""The ML engineers' dashboard: pages, htmx partials, forms, SVG charts and its URL map."""
