"""Tool calls in model output, Django-free (the layer under the apps; see architecture.md).

    parse     raw model text -> reasoning, reply text, calls, malformed blocks
    validate  OpenAI messages, tool specs and call arguments against their JSON schemas
    match     one call against an expected call; parallel calls as a bipartite matching
    defects   the six response_quality defects
    score     score_case (one case) and summarize (a run), exactly as metrics.md defines them

Standard library and jsonschema only: the importer, the correction editor, the dataset
audit, the eval runner and the training guard all use these same functions.
"""
