/*
 * sensor_node: stream a 3-axis accelerometer to the edgelstm daemon at 50 Hz and light the
 * LED when the daemon's prediction says "running" (the bundled activity model: still,
 * walking, running).
 *
 * Host side:  edgelstm run --model activity.elstm --serial /dev/ttyACM0 --serial-reply --out stdout
 * Wiring: an analog accelerometer (e.g. ADXL335) on A0, A1, A2. Replace read_accel() for I2C parts.
 */
#include <edgelstm_bridge.h>

static const uint16_t STREAM = 0;        /* one sensor on this board */
static const unsigned long PERIOD_MS = 20;
static const size_t N_INPUTS = 3, N_OUTPUTS = 3;

static uint8_t tx[ELB_WIRE_SIZE(4 + 4 * 3)];
static uint8_t rx_buf[ELB_DECODER_BUFFER_SIZE];
static elb_decoder rx;
static uint32_t seq = 0;
static unsigned long next_ms = 0;

static void read_accel(float *x)
{
    /* ADXL335 at 3.3 V: 1.65 V at 0 g, 0.33 V per g, on a 10-bit ADC referenced to 3.3 V. */
    x[0] = (analogRead(A0) * (3.3f / 1023.0f) - 1.65f) / 0.33f;
    x[1] = (analogRead(A1) * (3.3f / 1023.0f) - 1.65f) / 0.33f;
    x[2] = (analogRead(A2) * (3.3f / 1023.0f) - 1.65f) / 0.33f;
}

static void on_prediction(const elb_frame *f)
{
    float y[N_OUTPUTS];
    if (elb_decode_prediction(f, y, N_OUTPUTS) != ELB_OK) return;
    digitalWrite(LED_BUILTIN, (y[2] > y[0] && y[2] > y[1]) ? HIGH : LOW);
}

void setup()
{
    Serial.begin(115200);
    pinMode(LED_BUILTIN, OUTPUT);
    elb_decoder_init(&rx, rx_buf, sizeof rx_buf);

    /* PROTOCOL.md: after a boot send 0x00 (ends a partial frame), then HELLO, then seq 0. */
    randomSeed(analogRead(A3));
    uint8_t zero = 0;
    Serial.write(&zero, 1);
    elb_len_result r = elb_encode_hello(tx, sizeof tx, STREAM, (uint32_t)random(0x7FFFFFFF), N_INPUTS);
    if (r.status == ELB_OK) Serial.write(tx, r.len);
    next_ms = millis();
}

void loop()
{
    elb_frame f;
    while (Serial.available() > 0) {
        if (elb_decoder_feed(&rx, (uint8_t)Serial.read(), &f) == ELB_FRAME && f.type == ELB_PREDICTION)
            on_prediction(&f);
    }
    if ((long)(millis() - next_ms) < 0) return;
    next_ms += PERIOD_MS;

    float x[N_INPUTS];
    read_accel(x);
    elb_len_result r = elb_encode_reading(tx, sizeof tx, STREAM, seq++, millis(), x, N_INPUTS);
    if (r.status == ELB_OK) Serial.write(tx, r.len);
}
