"""tourney: rank many candidate LLM responses with a pairwise reasoning judge.

Where things go: ``strategies/`` (top level) holds the pure tournament algorithms; ``tourney.judges`` the judge
families (prompt template + verdict parser); ``tourney.backends`` what runs a judge (vLLM in-process, OpenAI-
compatible servers, the simulator); ``tourney.engine`` batches, caches and counts; ``tourney.cli`` is the command.
"""

__version__ = "0.1.0"
