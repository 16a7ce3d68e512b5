"""RL and SFT training of language models in the maze, and the shared model loader."""
