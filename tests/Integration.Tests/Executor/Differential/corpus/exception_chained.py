def parse(text):
    return int(text)


def load():
    try:
        parse('not a number')
    except ValueError as e:
        raise RuntimeError('could not load') from e


load()
