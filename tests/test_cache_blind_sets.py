"""The pair sets written blind — without reading the guards, the admission model, their tuning or any
other pair file's text — one per freeze of the cache's verification stage (docs/cache-heldout.md, the protocol):
each set's shape, and that it is other data than every other pair file (six domains used nowhere
else, no question shared). A set run once after a freeze is seen, and its rows say so (split "dev")."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

import costline.serving.cache
from costline.serving.cache.admission import read_pairs

DATA = Path(costline.serving.cache.__file__).resolve().parent / "data"
SAME = {"paraphrase": True, "near_repeat": True, "negation": False, "entity_swap": False,
        "number_date": False, "scope": False, "temporal": False}
EARLIER = ("cache_pair_set.jsonl", "cache_pair_heldout.jsonl", "cache_pair_heldout2.jsonl", "cache_pairs.jsonl",
           "cache_pair_compound.jsonl", "cache_pair_related.jsonl")
# (file, its six domains, its split now); a set is checked against every other pair file, those written
# beside it on other branches included
SETS = [
    ("cache_pair_heldout3.jsonl", {"pets", "ticketing", "childcare", "library", "coworking", "food_delivery"}, "dev"),
    ("cache_pair_heldout4.jsonl", {"solar", "car_rental", "dental", "language_school", "moving", "marketplace"}, "dev"),
    ("cache_pair_heldout5.jsonl",
     {"bike_share", "tax_prep", "music_streaming", "laundry", "event_venue", "home_repair"}, "dev"),
    ("cache_pair_heldout6.jsonl", {"ski_resort", "salon", "print_shop", "parking", "florist", "bootcamp"}, "dev"),
    ("cache_pair_heldout7.jsonl",
     {"ferry", "wine_club", "escape_room", "driving_school", "museum", "window_cleaning"}, "dev"),
    ("cache_pair_heldout8.jsonl",
     {"cinema", "bakery", "phone_repair", "campsite", "art_classes", "boat_rental"}, "dev"),
    ("cache_pair_heldout9.jsonl",
     {"theme_park", "dog_walking", "furniture", "waste_collection", "racket_club", "meal_kit"}, "dev"),
    ("cache_pair_heldout10.jsonl",
     {"car_wash", "karaoke", "piano_lessons", "bowling", "opticians", "wedding_planner"}, "dev"),
    ("cache_pair_heldout11.jsonl", {"self_storage", "spa", "pottery", "tutoring", "photography", "tailoring"}, "dev"),
    ("cache_pair_heldout12.jsonl",
     {"catering", "pest_control", "recording_studio", "horse_riding", "golf_course", "locksmith"}, "dev"),
    ("cache_pair_heldout13.jsonl",
     {"swimming_lessons", "tattoo_studio", "camera_rental", "garden_centre", "translation", "ev_charging"}, "dev"),
    ("cache_pair_heldout14.jsonl",
     {"archery", "coach_hire", "farm_shop", "cooking_school", "ice_rink", "bookbinding"}, "dev"),
    ("cache_pair_heldout15.jsonl",
     {"dance_school", "climbing_wall", "antique_restoration", "brewery_tours", "planetarium", "shoe_repair"}, "dev"),
    ("cache_pair_heldout16.jsonl",
     {"zoo", "surf_school", "hot_air_balloon", "bike_courier", "chimney_sweep", "magic_shows"}, "dev"),
    ("cache_pair_heldout17.jsonl",
     {"roller_rink", "sauna", "stationery_shop", "instrument_repair", "aquarium", "community_garden"}, "dev"),
    ("cache_pair_heldout18.jsonl",
     {"vehicle_inspection", "trampoline_park", "coffee_roastery", "model_railway_shop", "hearing_aid_clinic",
      "fencing_club"}, "dev"),
    ("cache_pair_heldout19.jsonl",
     {"laser_tag", "soap_making", "podcast_hosting", "glass_blowing", "sign_language_classes", "kite_shop"}, "dev"),
    ("cache_pair_heldout20.jsonl",
     {"go_karting", "vintage_clothing", "electronics_recycling", "puppet_theatre", "beekeeping_courses", "cheese_shop"},
     "dev"),
    ("cache_pair_heldout21.jsonl",
     {"sailing_club", "pawn_shop", "tree_surgery", "bridal_boutique", "yoga_retreat", "rug_cleaning"}, "dev"),
    ("cache_pair_heldout22.jsonl",
     {"scuba_diving", "jewellery_repair", "paintball", "notary_office", "pilates_studio", "bouncy_castle_hire"},
     "dev"),
    ("cache_pair_heldout23.jsonl",
     {"canal_boat_hire", "axe_throwing", "piano_tuning", "roofing", "wildlife_safari", "carpet_fitting"}, "dev"),
    ("cache_pair_heldout24.jsonl",
     {"mini_golf", "blacksmith_courses", "home_brewing_supplies", "upholstery", "dog_grooming", "watch_repair"},
     "dev"),
    ("cache_pair_heldout25.jsonl",
     {"glamping", "cider_mill", "drone_hire", "fossil_tours", "mosaic_workshops", "van_conversion"}, "dev"),
    ("cache_pair_heldout26.jsonl",
     {"lighthouse_tours", "vinyl_record_shop", "sewing_machine_repair", "rowing_club", "alpaca_trekking",
      "calligraphy_classes"}, "dev"),
    ("cache_pair_heldout27.jsonl",
     {"knife_sharpening", "falconry_days", "stained_glass_studio", "well_drilling", "bagpipe_lessons",
      "hedge_laying_courses"}, "dev"),
    ("cache_pair_heldout28.jsonl",
     {"beach_hut_rental", "pick_your_own_farm", "chess_club", "snooker_hall", "tuk_tuk_tours", "candle_making"},
     "dev"),
    ("cache_pair_heldout29.jsonl",
     {"funeral_home", "bicycle_repair", "hostel", "ballet_school", "tool_hire", "kayak_tours"}, "dev"),
    ("cache_pair_heldout30.jsonl",
     {"cattery", "scrap_metal_yard", "opera_house", "barber_shop", "glazier", "hat_shop"}, "dev"),
    ("cache_pair_heldout31.jsonl",
     {"dry_cleaning", "allotment_society", "film_processing_lab", "church_organ_recitals", "clock_repair",
      "pumpkin_patch"}, "dev"),
    ("cache_pair_heldout32.jsonl",
     {"costume_hire", "tile_showroom", "pub_quiz_league", "marine_engine_servicing", "sled_dog_tours",
      "veg_box_scheme"}, "dev"),
    ("cache_pair_heldout33.jsonl",
     {"ice_cream_parlour", "motorcycle_training", "bell_ringing_society", "reptile_shop", "lawn_bowls_club",
      "hovercraft_rides"}, "dev"),
    ("cache_pair_heldout34.jsonl",
     {"taxi_firm", "community_radio_station", "mushroom_foraging_walks", "3d_printing_service",
      "model_aircraft_club", "charity_shop"}, "dev"),
    ("cache_pair_heldout35.jsonl",
     {"bridge_club", "sports_massage_clinic", "christmas_tree_farm", "wetsuit_hire", "village_hall_bookings",
      "organic_butcher"}, "dev"),
    ("cache_pair_heldout36.jsonl",
     {"tyre_fitting", "ghost_walks", "sign_writing", "stamp_collecting_society", "ice_climbing_courses", "tea_room"},
     "dev"),
    ("cache_pair_heldout37.jsonl",
     {"river_cruises", "piano_removals", "hedgehog_rescue", "quilting_guild", "flight_simulator_experience",
      "holiday_cottage_cleaning"}, "dev"),
    ("cache_pair_heldout38.jsonl",
     {"vintage_bus_hire", "hot_tub_hire", "chocolate_workshop", "treetop_adventure_park", "telescope_shop",
      "baby_sensory_classes"}, "dev"),
    ("cache_pair_heldout39.jsonl",
     {"pizza_takeaway", "driving_test_centre", "antique_clock_fair", "kids_coding_club", "allergy_clinic",
      "camper_van_rental"}, "dev"),
    ("cache_pair_heldout40.jsonl",
     {"window_blinds_fitter", "youth_football_league", "perfume_counter", "canoe_polo_club", "mobile_dog_wash",
      "student_halls"}, "dev"),
    ("cache_pair_heldout41.jsonl",
     {"marina_berths", "vet_practice", "bridal_makeup_artist", "orienteering_club", "wakeboarding_lake",
      "school_uniform_shop"}, "dev"),
    ("cache_pair_heldout42.jsonl",
     {"physiotherapy_clinic", "horse_livery_yard", "downhill_bike_park", "cake_decorating_supplies",
      "festival_campsite", "parish_council_services"}, "dev"),
    ("cache_pair_heldout43.jsonl",
     {"caravan_storage", "dry_stone_walling_courses", "paddleboard_hire", "city_farm", "barn_dance_caller",
      "eyebrow_threading_bar"}, "dev"),
    ("cache_pair_heldout44.jsonl",
     {"coin_dealer", "car_boot_sale", "rural_post_office", "roller_derby_league", "bookkeeping_service",
      "kiln_firing_service"}, "dev"),
    ("cache_pair_heldout45.jsonl",
     {"community_choir", "cat_cafe", "wedding_band_hire", "repair_cafe", "gin_distillery_tours",
      "school_holiday_camp"}, "dev"),
    ("cache_pair_heldout46.jsonl",
     {"tree_house_holidays", "blood_donation_centre", "car_share_club", "beach_lifeguard_club", "passport_photo_shop",
      "cryotherapy_clinic"}, "dev"),
    ("cache_pair_heldout47.jsonl",
     {"ferry_to_island_day_trips", "climbing_shoe_resoling", "village_fete_committee", "mobile_bike_mechanic",
      "llama_farm_visits", "choir_robe_hire"}, "dev"),
    ("cache_pair_heldout48.jsonl",
     {"lawnmower_servicing", "birdwatching_hides", "glass_recycling_centre", "sea_fishing_charters",
      "model_shop_painting_classes", "night_market_stalls"}, "dev"),
    ("cache_pair_heldout49.jsonl",
     {"mattress_store", "shoe_shop", "plumbing_service", "art_gallery", "cemetery_office",
      "visa_application_centre"}, "dev"),
    ("cache_pair_heldout50.jsonl",
     {"chiropractor", "comic_book_store", "sports_stadium_tours", "pet_insurance", "food_bank", "cruise_line"},
     "dev"),
    ("cache_pair_heldout51.jsonl",
     {"planning_permission_office", "football_club_tickets", "bookshop", "laser_hair_removal", "student_loan_helpline",
      "vending_machine_operator"}, "dev"),
    ("cache_pair_heldout52.jsonl",
     {"acupuncture_clinic", "furniture_rental", "airport_lounge", "marathon_race_entries", "dog_daycare",
      "boiler_servicing"}, "dev"),
    ("cache_pair_heldout53.jsonl",
     {"kitchen_fitters", "pet_cremation", "sofa_shop", "darts_league", "carriage_rides", "toy_library"}, "dev"),
    ("cache_pair_heldout54.jsonl",
     {"cathedral_tours", "driveway_paving", "rugby_club", "arcade", "bin_cleaning_service", "heritage_railway"},
     "dev"),
    ("cache_pair_heldout55.jsonl",
     {"pet_shop", "window_replacement", "ice_cream_van_hire", "caving_trips", "yarn_shop",
      "garden_fencing_installers"}, "dev"),
    ("cache_pair_heldout56.jsonl",
     {"lighting_shop", "boxing_gym", "fireworks_displays", "garden_design", "pottery_painting_cafe", "tile_cleaning"},
     "dev"),
    ("cache_pair_heldout57.jsonl",
     {"tennis_coaching", "picture_framing", "funfair_ride_hire", "craft_fair_organiser", "mobile_hairdresser",
      "wedding_cake_maker"}, "dev"),
    ("cache_pair_heldout58.jsonl",
     {"scaffolding_hire", "segway_tours", "christmas_grotto", "auction_house", "sheet_music_shop",
      "septic_tank_emptying"}, "dev"),
    ("cache_pair_heldout59.jsonl",
     {"swimming_pool_maintenance", "chauffeur_service", "jet_ski_hire", "genealogy_research_service",
      "wood_burner_installers", "drama_school_for_children"}, "dev"),
    ("cache_pair_heldout60.jsonl",
     {"electric_gate_installers", "loft_conversion_builders", "mountain_bike_guiding", "bed_and_breakfast",
      "sushi_restaurant", "pizza_oven_sales"}, "dev"),
    ("cache_pair_heldout61.jsonl",
     {"kombucha_brewery", "greyhound_rescue", "handyman_service", "vinyl_flooring_fitters", "taxidermy_studio",
      "oyster_bar"}, "dev"),
    ("cache_pair_heldout62.jsonl",
     {"car_audio_fitting", "mobile_cocktail_bar", "bathroom_fitters", "beach_volleyball_club",
      "shepherd_hut_holidays", "coffee_machine_repair"}, "dev"),
    ("cache_pair_heldout63.jsonl",
     {"garage_door_repair", "cheese_making_courses", "guinea_pig_boarding", "party_boat_hire",
      "sports_trophy_engraving", "tiny_house_builders"}, "dev"),
    ("cache_pair_heldout64.jsonl",
     {"gutter_cleaning", "wild_swimming_club", "rock_band_school", "tea_blending_workshop", "drain_unblocking",
      "horsebox_hire"}, "dev"),
]
blind_sets = pytest.mark.parametrize(("name", "domains", "split"), SETS, ids=[s[0] for s in SETS])
ALL_FILES = EARLIER + tuple(s[0] for s in SETS)


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def questions(row: dict) -> tuple[str, str]:
    return row.get("q1", row.get("a", "")), row.get("q2", row.get("b", ""))


@blind_sets
def test_350_pairs_50_per_category_labels_follow_the_category(name, domains, split) -> None:
    data = rows(name)
    assert len(data) == 350
    assert Counter(r["category"] for r in data) == {cat: 50 for cat in SAME}
    for r in data:
        assert set(r) == {"q1", "q2", "same_answer", "category", "domain", "split"}, r
        assert r["same_answer"] is SAME[r["category"]] and r["split"] == split, r
        assert r["q1"].strip() and r["q2"].strip(), r
        assert r["q1"].strip().lower() != r["q2"].strip().lower(), r
    pairs, problems = read_pairs(DATA / name)  # what bench/cache.py reads
    assert problems == [] and len(pairs) == len(data)


@blind_sets
def test_every_category_spread_over_all_six_domains(name, domains, split) -> None:
    data = rows(name)
    assert {r["domain"] for r in data} == domains
    per = Counter((r["category"], r["domain"]) for r in data)
    assert all(8 <= per[(cat, dom)] <= 9 for cat in SAME for dom in domains), per


@blind_sets
def test_no_question_appears_twice_in_the_file(name, domains, split) -> None:
    seen = Counter(q.strip().lower() for r in rows(name) for q in questions(r))
    assert [q for q, n in seen.items() if n > 1] == []


@blind_sets
def test_domains_used_nowhere_else_and_no_question_shared_with_any_other_pair_file(name, domains, split) -> None:
    assert_apart_from_every_other_pair_file(name, domains)


def assert_apart_from_every_other_pair_file(name: str, domains: set[str]) -> None:
    """No other pair file uses one of ``domains`` or asks a question of ``name`` (case and spacing aside)."""
    seen: set[str] = set()
    for other_name in (f for f in ALL_FILES if f != name):
        other = rows(other_name)
        assert not domains & {r.get("domain", "") for r in other}, other_name
        seen |= {q.strip().lower() for r in other for q in questions(r)}
    assert [q for r in rows(name) for q in questions(r) if q.strip().lower() in seen] == []


COMPOUND = {"paraphrase": True, "near_repeat": True, "entity_swap": False, "situation_swap": False,
            "intent_swap": False, "double_swap": False}


def test_the_compound_question_pairs_are_a_train_file_of_six_categories_in_six_domains() -> None:
    """cache_pair_compound.jsonl (the thing, what happened, what is asked; one part swapped in a trap) trains the
    pair model: train split only, so no kept-out figure ever reads it."""
    data = rows("cache_pair_compound.jsonl")
    assert len(data) == 480 and Counter(r["category"] for r in data) == {cat: 80 for cat in COMPOUND}
    assert Counter(r["domain"] for r in data) == {d: 80 for d in (
        "rail_travel", "bank_cards", "apartment_rental", "mobile_phone_plans", "hotel_stays", "appliance_repair")}
    assert all(r["same_answer"] is COMPOUND[r["category"]] and r["split"] == "train" for r in data)
    seen = Counter(q for r in data for q in questions(r))
    assert [q for q, n in seen.items() if n > 1] == []
    pairs, problems = read_pairs(DATA / "cache_pair_compound.jsonl")
    assert problems == [] and len(pairs) == 480


RELATED = {"paraphrase": True, "near_repeat": True, "other_question": False, "negation": False, "entity_swap": False,
           "number_date": False, "scope": False, "temporal": False}
RELATED_DOMAINS = {
    "mortgage_broker", "dog_training_classes", "furniture_assembly", "nail_salon", "indoor_skydiving",
    "school_admissions_office", "electric_scooter_rental", "home_energy_assessment", "adult_evening_classes",
    "sandwich_shop", "craft_beer_bar", "piercing_studio", "au_pair_agency", "driving_range", "fishing_lake",
    "marquee_hire", "computer_repair_shop", "vegan_restaurant", "window_tinting", "language_exchange_meetup",
    "guitar_shop", "skip_hire", "cycle_to_work_scheme", "soft_play_centre"}


def test_the_related_question_pairs_are_a_train_file_in_domains_used_nowhere_else() -> None:
    """cache_pair_related.jsonl (loose paraphrases beside questions on the same topic that ask something else)
    trains the pair model: train split only, 24 domains of its own, no question shared with another pair file."""
    data = rows("cache_pair_related.jsonl")
    assert len(data) == 1506 and set(Counter(r["category"] for r in data)) == set(RELATED)
    assert {r["domain"] for r in data} == RELATED_DOMAINS
    assert all(r["same_answer"] is RELATED[r["category"]] and r["split"] == "train" for r in data)
    seen = Counter(q.strip().lower() for r in data for q in questions(r))
    assert [q for q, n in seen.items() if n > 1] == []
    assert_apart_from_every_other_pair_file("cache_pair_related.jsonl", RELATED_DOMAINS)
    pairs, problems = read_pairs(DATA / "cache_pair_related.jsonl")
    assert problems == [] and len(pairs) == 1506
