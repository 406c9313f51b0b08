print('never runs')
x = (
