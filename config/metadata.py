"""What ``OPTIONS`` answers on the REST API: the operation's name, description and media types.

DRF's default also describes the fields each method takes by building the view's serializer,
which the API's views choose per method; the OpenAPI schema (``/api/schema/``) describes those
fields instead, for every method at once.
"""

from __future__ import annotations

from rest_framework.metadata import SimpleMetadata


class ApiMetadata(SimpleMetadata):
    """``{"name", "description", "renders", "parses"}`` for any view, never a server error."""

    def determine_metadata(self, request, view) -> dict:
        return {
            "name": view.get_view_name(),
            "description": view.get_view_description(),
            "renders": [renderer.media_type for renderer in view.renderer_classes],
            "parses": [parser.media_type for parser in view.parser_classes],
        }
