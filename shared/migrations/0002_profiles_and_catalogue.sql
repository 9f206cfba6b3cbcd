-- Profiles, written by the reaction to user.registered and by /users; course listing.

CREATE TABLE profiles (
    user_id       uuid        PRIMARY KEY,
    email         text        NOT NULL,
    full_name     text        NOT NULL,
    phone         text,
    bio           text,
    avatar_key    text,
    avatar_url    text,
    role          text        NOT NULL CHECK (role IN ('user', 'author', 'admin')),
    registered_at timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX profiles_email ON profiles (lower(email));
CREATE INDEX profiles_registered_at ON profiles (registered_at);

CREATE INDEX courses_starts_at ON courses (starts_at);
CREATE INDEX courses_created_at ON courses (created_at);
CREATE INDEX courses_status ON courses (status);
