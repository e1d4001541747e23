/* log — leveled diagnostics on stderr for tools and libraries.
 *
 * Owns: the process-wide verbosity and the line format "prog: level: msg".
 * Library code logs progress and warnings here; it never logs errors it also
 * returns (the caller prints those once). Default level is MOE_LOG_INFO; -v
 * raises it, -q lowers it.
 */
#ifndef MOE_FORMATS_LOG_H
#define MOE_FORMATS_LOG_H

typedef enum moe_log_level {
    MOE_LOG_ERROR = 0,
    MOE_LOG_WARN = 1,
    MOE_LOG_INFO = 2,
    MOE_LOG_DEBUG = 3,
} moe_log_level;

/* Sets the program name shown on each line (borrowed; keep it alive). */
void moe_log_set_prog(const char *prog);
void moe_log_set_level(moe_log_level level);
moe_log_level moe_log_get_level(void);

/* Prints one line if level <= the current verbosity. */
void moe_log(moe_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define MOE_WARN(...) moe_log(MOE_LOG_WARN, __VA_ARGS__)
#define MOE_INFO(...) moe_log(MOE_LOG_INFO, __VA_ARGS__)
#define MOE_DEBUG(...) moe_log(MOE_LOG_DEBUG, __VA_ARGS__)

#endif
