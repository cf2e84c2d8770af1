"""The tables behind the bundled offline benchmark: topics, their facts, and the stock phrases.

Pure data, no logic. `benchmark.py` composes prompts and responses from these tables and its gold
reward recognises the same phrases, so a phrase must be written exactly once here. Rules the tests
check: every fact phrase (correct or wrong) is unique across all topics, no stock phrase contains a
fact phrase, and every topic has 5 correct facts (in step order for how-to topics) and 3 wrong ones.
Numbers are spelled out so that matching after normalisation (lowercase, letters and digits only)
is exact.
"""

from __future__ import annotations

from typing import NamedTuple


class Topic(NamedTuple):
    key: str
    kind: str  # "howto" (subject is a verb phrase) or "about" (subject is a noun phrase)
    subject: str  # appears verbatim in every prompt of the topic; identifies the topic
    facts: tuple[str, ...]  # correct facts or steps, in order
    wrong: tuple[str, ...]  # plausible but wrong facts (corruptions of this topic's facts)


def _t(key, kind, subject, facts, wrong) -> Topic:
    return Topic(key, kind, subject, tuple(facts), tuple(wrong))


TOPICS: tuple[Topic, ...] = (
    _t("green_tea", "howto", "make green tea",
       ["heat water to eighty degrees", "use one teaspoon of leaves", "steep for three minutes",
        "remove the leaves", "serve it without milk"],
       ["steep for twenty minutes", "add salt to the tea", "use ten spoons of leaves"]),
    _t("egg", "howto", "boil an egg",
       ["place the egg in cold water", "bring the water to a boil", "cook for nine minutes",
        "cool the egg in ice water", "peel it under running water"],
       ["cook for forty minutes", "crack the egg into the pot first", "microwave it in the shell"]),
    _t("tire", "howto", "change a flat tire",
       ["loosen the lug nuts first", "raise the car with a jack", "swap in the spare tire",
        "tighten the nuts in a star pattern", "lower the car slowly"],
       ["remove the engine first", "drive on the bare rim", "leave the lug nuts loose"]),
    _t("tomato", "howto", "plant a tomato seedling",
       ["choose a sunny spot", "dig a deep hole", "bury most of the stem",
        "water the roots well", "add a stake for support"],
       ["plant it in full shade", "water it with sea water", "cut off all the leaves"]),
    _t("sweater", "howto", "wash a wool sweater",
       ["use cold water", "add a gentle wool detergent", "do not wring it",
        "press out water with a towel", "dry it flat"],
       ["use very hot water", "wring it hard", "hang it on a hook to dry"]),
    _t("campfire", "howto", "start a campfire",
       ["clear a safe fire ring", "stack dry tinder in the middle", "add small kindling sticks",
        "light the tinder from below", "add larger logs slowly"],
       ["use wet leaves as tinder", "pour gasoline on the logs", "build it under a tree"]),
    _t("backup", "howto", "back up a laptop",
       ["get an external drive", "turn on automatic backups", "keep one copy offsite",
        "test restoring a file", "back up every week"],
       ["delete the original files", "keep the only copy on the laptop", "back up once a decade"]),
    _t("juggle", "howto", "learn to juggle",
       ["start with one ball", "toss it in an arc", "keep the throws at eye level",
        "add the second ball", "practice over a bed"],
       ["start with seven balls", "throw the balls at the ceiling", "keep your eyes closed"]),
    _t("rice", "howto", "cook white rice",
       ["rinse the rice first", "use two cups of water per cup", "simmer with the lid on",
        "cook for eighteen minutes", "let it rest before serving"],
       ["never measure the water", "cook for two hours", "keep stirring the whole time"]),
    _t("cover_letter", "howto", "write a cover letter",
       ["address the hiring manager by name", "mention the job title", "show how your skills fit",
        "keep it to one page", "end with a call to action"],
       ["make it ten pages long", "copy the job ad word for word", "leave out your contact details"]),
    _t("puppy", "howto", "train a puppy to sit",
       ["hold a treat above its nose", "move the treat back slowly", "say sit once",
        "reward it right away", "keep sessions short"],
       ["shout at the puppy", "push it down hard", "train for three hours at once"]),
    _t("cast_iron", "howto", "clean a cast iron pan",
       ["scrub it with hot water", "keep it out of the dishwasher", "dry it completely",
        "rub in a thin layer of oil", "heat it briefly on the stove"],
       ["soak it overnight", "run it through the dishwasher", "leave it wet to air dry"]),
    _t("sleep", "howto", "improve my sleep",
       ["keep a regular bedtime", "avoid caffeine after noon", "keep the bedroom dark",
        "put screens away before bed", "get morning sunlight"],
       ["drink coffee before bed", "sleep with bright lights on", "change your bedtime every night"]),
    _t("budget", "howto", "make a monthly budget",
       ["list your monthly income", "track every expense", "sort spending into categories",
        "set a savings goal", "review it each month"],
       ["ignore small expenses", "spend your savings first", "never check your bank account"]),
    _t("interview", "howto", "prepare for a job interview",
       ["research the company", "practice common questions", "prepare a few stories",
        "dress one step above the dress code", "arrive ten minutes early"],
       ["arrive an hour late", "never look up the company", "complain about your old boss"]),
    _t("coffee", "howto", "brew pour over coffee",
       ["grind the beans medium fine", "rinse the paper filter", "let the grounds bloom",
        "pour in slow circles", "use water just off the boil"],
       ["use instant coffee powder", "pour all the water at once", "grind the beans into dust"]),
    _t("paint", "howto", "paint a room",
       ["move the furniture out", "cover the floor with drop cloths", "tape the trim",
        "apply a coat of primer", "paint two thin coats"],
       ["paint over the dust", "apply one very thick coat", "paint bare walls without primer"]),
    _t("bread", "howto", "bake bread at home",
       ["mix flour water yeast and salt", "knead the dough for ten minutes", "let it rise until doubled",
        "shape the loaf", "bake it in a hot oven"],
       ["bake it in a cold oven", "leave out the yeast", "knead the dough for one second"]),
    _t("burn", "howto", "treat a minor burn",
       ["cool it under running water", "keep it cool for twenty minutes", "remove rings near the burn",
        "cover it with a clean bandage", "take a mild pain reliever"],
       ["put butter on the burn", "press ice on it for an hour", "pop the blisters"]),
    _t("fish_tank", "howto", "set up a fish tank",
       ["rinse the gravel", "fill it with dechlorinated water", "install a filter and heater",
        "cycle the tank for a few weeks", "add a few fish at a time"],
       ["add all the fish on day one", "use tap water with chlorine", "run it without a filter"]),
    _t("language", "howto", "learn a new language",
       ["practice a little every day", "learn the most common words", "speak with native speakers",
        "listen to podcasts", "use spaced repetition flashcards"],
       ["study only once a year", "memorize the whole dictionary first", "never speak until fluent"]),
    _t("knife", "howto", "sharpen a kitchen knife",
       ["soak the whetstone", "hold a steady twenty degree angle", "sweep the blade across the stone",
        "sharpen both sides evenly", "finish with a honing rod"],
       ["use a ninety degree angle", "sharpen only the tip", "grind it on concrete"]),
    _t("bicycle", "howto", "ride a bicycle",
       ["adjust the seat height", "wear a helmet", "start on a gentle slope",
        "look ahead not down", "push the pedals smoothly"],
       ["ride without brakes", "stare down at your feet", "start on a steep hill"]),
    _t("airplane", "howto", "make a paper airplane",
       ["fold the paper in half lengthwise", "fold the top corners to the center", "fold the edges in again",
        "fold the wings down", "throw it gently forward"],
       ["crumple the paper into a ball", "throw it straight down", "use soaking wet paper"]),
    _t("nosebleed", "howto", "stop a nosebleed",
       ["sit up and lean forward", "pinch the soft part of the nose", "hold it for ten minutes",
        "breathe through your mouth", "apply a cold pack"],
       ["tilt your head back", "lie flat on your back", "blow your nose hard"]),
    _t("exam", "howto", "study for an exam",
       ["start a few weeks early", "test yourself often", "space out your sessions",
        "explain ideas out loud", "sleep well the night before"],
       ["cram the whole night before", "only reread your notes", "skip sleep to study"]),
    _t("houseplant", "howto", "care for a houseplant",
       ["water it when the soil is dry", "give it bright indirect light", "use a pot with drainage holes",
        "feed it in spring", "wipe dust off the leaves"],
       ["water it every hour", "keep it in a dark closet", "use a pot without holes"]),
    _t("groceries", "howto", "save money on groceries",
       ["plan meals for the week", "shop with a list", "buy store brands",
        "avoid shopping hungry", "cook in bulk"],
       ["shop when you are starving", "buy only premium brands", "throw away leftovers"]),
    _t("moon", "about", "the moon",
       ["it orbits earth in about a month", "it has almost no atmosphere", "it causes the ocean tides",
        "it always shows the same face", "people first walked on it in nineteen sixty nine"],
       ["it is made of cheese", "it makes its own light", "it is bigger than earth"]),
    _t("bees", "about", "honey bees",
       ["they live in large colonies", "a colony has one queen", "they make honey from nectar",
        "they pollinate many crops", "they dance to share directions"],
       ["they make honey from sand", "a colony has ten queens", "they live alone in caves"]),
    _t("heart", "about", "the human heart",
       ["it has four chambers", "it pumps blood through the body", "it beats about seventy times a minute",
        "it is a muscle", "the left side pumps blood to the body"],
       ["it has nine chambers", "it is a bone", "it beats once a day"]),
    _t("volcano", "about", "volcanoes",
       ["they form where magma reaches the surface", "many sit along plate boundaries",
        "lava can exceed one thousand degrees", "ash clouds can disrupt flights",
        "some stay dormant for centuries"],
       ["they are filled with water", "lava is ice cold", "they only exist on the moon"]),
    _t("pacific", "about", "the pacific ocean",
       ["it is the largest ocean", "it is also the deepest ocean", "it holds the mariana trench",
        "it is ringed by volcanoes", "it covers about a third of earth"],
       ["it is the smallest ocean", "it is a freshwater lake", "it has no islands"]),
    _t("photosynthesis", "about", "photosynthesis",
       ["plants use sunlight for energy", "it turns carbon dioxide into sugar", "it releases oxygen",
        "it happens in chloroplasts", "it needs water from the roots"],
       ["it happens only at night", "it releases carbon monoxide", "it happens in the soil"]),
    _t("rome", "about", "the roman empire",
       ["its capital was rome", "it was ruled by emperors", "it built long roads and aqueducts",
        "latin was its main language", "the western half fell in four seventy six"],
       ["its capital was paris", "its main language was english", "it was founded last century"]),
    _t("penguins", "about", "penguins",
       ["they cannot fly", "they are strong swimmers", "most live in the southern hemisphere",
        "they eat fish and krill", "parents take turns keeping eggs warm"],
       ["they live at the north pole", "they fly south for winter", "they eat only grass"]),
    _t("mars", "about", "the planet mars",
       ["it is called the red planet", "its color comes from iron oxide", "it has two small moons",
        "it has the tallest volcano known", "a day there lasts about twenty four hours"],
       ["it has a thick oxygen atmosphere", "it is the hottest planet", "it has no moons"]),
    _t("water_cycle", "about", "the water cycle",
       ["water evaporates from the sea", "vapor cools into clouds", "clouds release rain or snow",
        "rivers carry water back to the sea", "plants return vapor to the air"],
       ["clouds are made of smoke", "water never evaporates", "rain falls upward"]),
    _t("electric_cars", "about", "electric cars",
       ["they run on rechargeable batteries", "they have no tailpipe emissions", "they can charge at home",
        "they use regenerative braking", "their motors are very efficient"],
       ["they run on diesel", "they never need charging", "their batteries last one week"]),
    _t("great_wall", "about", "the great wall of china",
       ["it stretches thousands of kilometers", "it was built over many dynasties",
        "it protected against northern raids", "much of it dates from the ming era",
        "it is made of stone brick and earth"],
       ["it was built in one year", "it is made of glass", "it is in brazil"]),
)

# Question templates: {x} is the topic subject. Ten per kind; the benchmark holds out some
# (topic, template) combinations for evaluation.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "howto": (
        "How do I {x}?",
        "What is the best way to {x}?",
        "Can you explain how to {x}?",
        "What are the steps to {x}?",
        "I want to {x}. Where do I start?",
        "Could you walk me through how to {x}?",
        "Any tips on how to {x}?",
        "What should I do to {x}?",
        "Tell me how to {x}.",
        "I have never tried to {x} before. How does it work?",
    ),
    "about": (
        "What can you tell me about {x}?",
        "Tell me some facts about {x}.",
        "What should I know about {x}?",
        "Can you describe {x}?",
        "I am curious about {x}. What is worth knowing?",
        "Give me a quick summary of {x}.",
        "What are the key facts about {x}?",
        "Explain {x} to me.",
        "I have a test on {x} tomorrow. What matters most?",
        "Teach me something about {x}.",
    ),
}

# Prefixes a user might put before the question; crossed with templates for prompt variety.
OPENERS: tuple[str, ...] = (
    "", "Hi! ", "Hello. ", "Quick question. ", "Hey there. ", "Please help. ", "Good morning. ",
    "I need some advice. ", "Thanks in advance. ", "Question for you. ",
)

# Short leads of a concise answer. Harmless to the gold reward.
CONCISE_LEADS: tuple[str, ...] = ("", "", "", "Sure. ", "Okay. ", "Right. ")

# Padding sentences of the verbose source; the gold reward penalises each occurrence.
FILLERS: tuple[str, ...] = (
    "That is a great question.",
    "I am really glad you asked about this.",
    "There are many different opinions on this.",
    "Let me explain everything in detail.",
    "To be completely honest with you,",
    "As most people already know,",
    "It is worth keeping all of this in mind.",
    "I really hope this helps you out.",
    "Everyone has their own way of doing it.",
    "In my personal experience,",
    "Feel free to ask me anything else.",
    "This is something many people wonder about.",
)

# Refusal sentences, and the key phrases by which the gold reward recognises a refusal.
REFUSALS: tuple[str, ...] = (
    "I am sorry, but I cannot help with that.",
    "I would rather not answer that question.",
    "I cannot give advice on this topic.",
    "That is not something I can discuss.",
    "Please ask a professional instead.",
    "I do not feel comfortable answering this.",
)
REFUSAL_KEYS: tuple[str, ...] = (
    "cannot help with that", "rather not answer", "cannot give advice", "not something i can discuss",
    "ask a professional", "not feel comfortable",
)

# Rude sentences and their key phrases.
RUDE: tuple[str, ...] = (
    "What a stupid question.",
    "Figure it out yourself.",
    "Even a child knows this.",
    "Stop wasting my time.",
    "Honestly, that is a dumb thing to ask.",
    "Use your brain for once.",
)
RUDE_KEYS: tuple[str, ...] = (
    "stupid", "figure it out yourself", "even a child knows", "wasting my time", "dumb", "use your brain",
)

# Off-topic chatter: answers nothing.
CHATTER: tuple[str, ...] = (
    "I watched a great movie about pirates last night.",
    "My favorite color is blue, what is yours?",
    "The weather has been lovely this week.",
    "Let us talk about football instead.",
    "I once had a cat named Biscuit.",
    "Did you know that I like jazz music?",
    "Mondays are always so long.",
    "I am thinking about going on a holiday soon.",
)
