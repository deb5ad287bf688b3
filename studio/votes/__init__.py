"""Blind votes: the ballots, which votes count, and the leaderboard (Bradley–Terry
ratings with bootstrap intervals)."""
