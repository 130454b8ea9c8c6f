"""The board (挂图作战看板): the Center's battle map and every unit's view."""
