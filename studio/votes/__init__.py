"""Blind votes: the leaderboard maths (Bradley–Terry ratings and their bootstrap intervals)."""
