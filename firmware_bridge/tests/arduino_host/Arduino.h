/* Just enough of the Arduino core's declarations to compile-check the example sketches on
 * the host (g++ -fsyntax-only); nothing here runs. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#define HIGH 1
#define LOW 0
#define OUTPUT 1
#define LED_BUILTIN 13
#define A0 14
#define A1 15
#define A2 16
#define A3 17

int analogRead(uint8_t pin);
void pinMode(uint8_t pin, uint8_t mode);
void digitalWrite(uint8_t pin, uint8_t value);
unsigned long millis(void);
void randomSeed(unsigned long seed);
long random(long max);

struct HardwareSerial {
    void begin(unsigned long baud);
    int available(void);
    int read(void);
    size_t write(const uint8_t *data, size_t n);
};
extern HardwareSerial Serial;
