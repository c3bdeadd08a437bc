"""
A procedural generator of simple children's stories, TinyStories style, so that the trainer has a real offline
corpus: no download, standard library only, deterministic for a seed.

    python synthetic_stories.py --seed=3        # print three stories

Each plot template is a small function filling random characters, places, objects and feelings into sentences
with dialogue; pronouns follow the hero, and "a"/"an" follow the noun.
"""

import argparse
import random

GIRLS = ["Lily", "Mia", "Sara", "Emma", "Anna", "Lucy", "Zoe", "Ella", "Rose", "Amy", "Kim", "Nora", "Ruby", "Ivy",
         "Grace", "Sophie", "Maya", "Chloe", "Daisy", "Hannah", "Molly", "Jane", "Sue", "Tina"]
BOYS = ["Tom", "Ben", "Max", "Sam", "Jack", "Leo", "Tim", "Jake", "Noah", "Finn", "Joe", "Bob", "Dan", "Luke", "Owen",
        "Eli", "Theo", "Henry", "Oscar", "Adam", "Ryan", "Paul", "Pete", "Jim"]
ANIMALS = ["dog", "cat", "bunny", "bird", "frog", "duck", "fox", "bear", "mouse", "owl", "puppy", "kitten", "horse",
           "cow", "pig", "lamb", "turtle", "squirrel", "fish", "elephant", "lion", "monkey", "goat", "hen"]
ANIMAL_NAMES = ["Spot", "Fluffy", "Buddy", "Coco", "Sunny", "Pip", "Whiskers", "Patch", "Bella", "Rex", "Hoppy", "Mo"]
PLACES = ["the park", "the forest", "the beach", "the garden", "the farm", "the kitchen", "school", "the pond",
          "the hill", "the zoo", "the market", "the playground", "the lake", "the library", "the backyard", "the woods"]
OBJECTS = ["ball", "kite", "hat", "toy car", "doll", "book", "teddy bear", "balloon", "boat", "drum", "crayon",
           "blanket", "cup", "shell", "spoon", "box", "train", "robot", "flower", "apple", "cookie", "rock", "bell",
           "umbrella", "scarf", "sock", "shoe", "map", "key", "ribbon", "puzzle", "whistle"]
COLORS = ["red", "blue", "green", "yellow", "pink", "purple", "orange", "big", "small", "shiny", "soft", "old", "new"]
HAPPY = ["happy", "glad", "proud", "excited", "joyful"]
SAD = ["sad", "upset", "worried", "scared", "lonely"]
OPENINGS = ["Once upon a time", "One day", "One sunny day", "Long ago", "One morning", "One rainy day",
            "One cold winter day", "On a warm summer day", "One evening"]
ADULTS = [("mom", "she"), ("dad", "he"), ("grandma", "she"), ("grandpa", "he"), ("teacher", "she")]


def article(word):
    return ("an " if word[0] in "aeiou" else "a ") + word


class Story:
    """The cast of one story, so every template refers to the same hero, friend and object all the way through."""

    def __init__(self, rng):
        self.rng = rng
        girl = rng.random() < 0.5
        self.name = rng.choice(GIRLS if girl else BOYS)
        self.he, self.his, self.him = ("she", "her", "her") if girl else ("he", "his", "him")
        self.friend = rng.choice([n for n in GIRLS + BOYS if n != self.name])
        self.animal = rng.choice(ANIMALS)
        self.pet = rng.choice(ANIMAL_NAMES)
        self.place = rng.choice(PLACES)
        self.thing = rng.choice(OBJECTS)
        self.color = rng.choice(COLORS)
        self.adult, self.adult_he = rng.choice(ADULTS)
        self.opening = rng.choice(OPENINGS)

    def pick(self, *options):
        return self.rng.choice(options)

    def intro(self):
        who = self.pick(f"there was a little {'girl' if self.he == 'she' else 'boy'} named {self.name}",
                        f"{self.name} went to {self.place}", f"{self.name} was playing at {self.place}")
        return f"{self.opening}, {who}. {self.He} {self.pick('loved', 'liked')} {self.his} {self.color} {self.thing}."

    @property
    def He(self):
        return self.he.capitalize()


def lost_and_found(s):
    return [s.intro(),
            f"One day, {s.name} could not find {s.his} {s.thing}. {s.He} looked under the bed and behind the door. "
            f"{s.He} felt {s.pick(*SAD)}.",
            f"\"{s.adult.capitalize()}, have you seen my {s.thing}?\" asked {s.name}. "
            f"\"Let's look at {s.place},\" said {s.adult}.",
            f"They went to {s.place} together. There, under a {s.pick('tree', 'bench', 'bush', 'table')}, was the "
            f"{s.color} {s.thing}! {s.name} was so {s.pick(*HAPPY)}. {s.He} hugged {s.adult} and said, "
            f"\"Thank you!\"",
            s.pick(f"From that day on, {s.name} always put {s.his} {s.thing} in a safe place.",
                   f"{s.name} learned that it helps to ask for help.")]


def sharing(s):
    return [s.intro(),
            f"{s.friend} came to play. {s.friend} saw the {s.thing} and said, \"Can I play with it too?\"",
            f"{s.name} did not want to share. \"No, it is mine!\" {s.he} said. {s.friend} felt {s.pick(*SAD)} "
            f"and sat down alone.",
            f"Then {s.name} saw that {s.friend} was {s.pick('crying', 'quiet', 'sad')}. {s.He} thought for a "
            f"moment. \"Here, we can play together,\" {s.he} said.",
            f"They played with the {s.thing} all day and had lots of fun. {s.name} learned that sharing is "
            f"{s.pick('fun', 'kind', 'good')}."]


def brave(s):
    noise = s.pick("a loud noise", "a strange sound", "a big shadow")
    return [s.intro(),
            f"One night, {s.name} heard {noise} outside. {s.He} was {s.pick('scared', 'afraid', 'worried')}. "
            f"{s.He} held {s.his} {s.thing} tight.",
            f"\"Who is there?\" {s.name} asked in a small voice. Nobody answered.",
            f"{s.name} took a deep breath and looked out the window. It was only a little {s.animal}! "
            f"The {s.animal} looked cold and hungry.",
            f"{s.name} gave the {s.animal} some {s.pick('milk', 'bread', 'water', 'food')}. The {s.animal} was "
            f"happy, and {s.name} felt brave and proud."]


def help_animal(s):
    return [s.intro(),
            f"At {s.place}, {s.name} found {article(s.animal)} that was stuck in a "
            f"{s.pick('hole', 'bush', 'fence', 'box')}. \"Help me, please!\" said the {s.animal}.",
            f"{s.name} wanted to help. {s.He} pulled and pulled, but the {s.animal} did not move. "
            f"Then {s.friend} came and helped too.",
            f"Together they pulled one more time, and the {s.animal} was free! \"Thank you,\" said the "
            f"{s.animal}. \"My name is {s.pet}.\"",
            f"From that day on, {s.pet} the {s.animal} and {s.name} were best friends. They played at "
            f"{s.place} every day."]


def sad_friend(s):
    return [s.intro(),
            f"One day, {s.name} saw {s.friend} sitting alone at {s.place}. {s.friend} looked "
            f"{s.pick(*SAD)}.",
            f"\"Why are you sad?\" asked {s.name}. \"I have no one to play with,\" said {s.friend}.",
            f"{s.name} smiled and showed {s.friend} {s.his} {s.color} {s.thing}. \"Do you want to play with me?\" "
            f"{s.he} asked.",
            f"{s.friend} smiled too. They {s.pick('ran and laughed', 'played until the sun went down', 'sang songs')}"
            f" together. {s.name} was {s.pick(*HAPPY)} to have a new friend."]


def try_new(s):
    thing = s.pick("ride a bike", "swim", "climb a tree", "bake a cake", "fly a kite", "read a big book")
    return [s.intro(),
            f"{s.name} wanted to {thing}, but it was hard. The first time, {s.he} fell down. "
            f"{s.He} felt {s.pick(*SAD)}.",
            f"\"I can't do it,\" said {s.name}. \"Try again,\" said {s.adult}. \"You can do it if you keep "
            f"trying.\"",
            f"So {s.name} tried again, and again. {s.He} did not give up. At last, {s.he} could {thing}!",
            f"{s.name} was very {s.pick(*HAPPY)}. {s.adult.capitalize()} clapped and said, \"Good job!\""]


def mistake(s):
    return [s.intro(),
            f"One day, {s.name} was running in the {s.pick('house', 'kitchen', 'garden')}. {s.He} bumped into a "
            f"table, and {s.adult}'s {s.pick('vase', 'cup', 'plate', 'pot')} fell and broke.",
            f"{s.name} felt bad. {s.He} wanted to hide, but {s.he} knew that was not right.",
            f"{s.He} went to {s.adult} and said, \"I am sorry. I broke it.\" {s.adult.capitalize()} gave "
            f"{s.him} a hug. \"Thank you for telling me the truth,\" {s.adult_he} said.",
            f"Together they cleaned up. {s.name} learned to be careful and to always say sorry."]


def rainy_day(s):
    return ["One rainy day, " + s.intro().split(", ", 1)[1],
            f"{s.name} wanted to go to {s.place}, but it was raining. \"Can we go out?\" {s.he} asked. "
            f"\"Not now,\" said {s.adult}. \"It is too wet.\"",
            f"{s.name} was {s.pick(*SAD)}. Then {s.he} had an idea. {s.He} made a fort with a blanket and "
            f"played with {s.his} {s.thing} inside.",
            f"Soon the rain stopped and the sun came out. There was a big rainbow in the sky! {s.name} and "
            f"{s.adult} went to {s.place} and jumped in the puddles."]


def race(s):
    winner = s.pick(s.name, s.friend)
    return [s.intro(),
            f"One day, {s.name} and {s.friend} had a race at {s.place}. \"Ready, set, go!\" said {s.adult}.",
            f"They ran as fast as they could. {s.friend} was fast, but {s.name} was fast too.",
            f"In the end, {winner} won the race. " + (
                f"{s.name} was {s.pick(*HAPPY)}, but {s.he} told {s.friend}, \"You ran very well.\""
                if winner == s.name else
                f"{s.name} was a little sad, but {s.he} said, \"Good race, {s.friend}!\""),
            "They laughed and had a snack together. Winning is fun, but playing with a friend is better."]


def baking(s):
    treat = s.pick("cookies", "a cake", "muffins", "bread", "a pie")
    return [s.intro(),
            f"One day, {s.name} went to grandma's house. \"Let's make {treat},\" said grandma. {s.name} was "
            f"{s.pick(*HAPPY)}.",
            f"They put flour, sugar and eggs in a big bowl. {s.name} mixed and mixed. Some flour fell on {s.his} "
            f"nose, and they both laughed.",
            f"Soon the {treat.split()[-1]} {'were' if treat.endswith('s') else 'was'} ready. The house smelled "
            f"so good! {s.name} shared the {treat.split()[-1]} with {s.friend} and {s.pet} the {s.animal}.",
            f"\"This is the best day,\" said {s.name}."]


PLOTS = [lost_and_found, sharing, brave, help_animal, sad_friend, try_new, mistake, rainy_day, race, baking]


def generate_story(rng):
    """One story: a few short paragraphs separated by single newlines, no trailing newline."""
    s = Story(rng)
    return "\n".join(rng.choice(PLOTS)(s))


def generate_stories(num_bytes, seed=1337):
    """Yield stories until their UTF-8 sizes add up to at least num_bytes. Same seed -> same stories."""
    rng, total = random.Random(seed), 0
    while total < num_bytes:
        story = generate_story(rng)
        total += len(story.encode("utf-8"))
        yield story


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print("\n\n".join(generate_story(rng) for _ in range(3)))
